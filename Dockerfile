# The Cairn image: one installed package, every process started with `cairn ...`.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends gfal2 gfal2-plugin-xrootd gfal2-plugin-http python3-gfal2 xrootd-client curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/cairn
COPY . .
RUN pip install --no-cache-dir . && useradd --system --home /var/lib/cairn cairn && mkdir -p /var/lib/cairn && chown cairn /var/lib/cairn
USER cairn
ENV CAIRN_VAR_DIR=/var/lib/cairn CAIRN_API_HOST=0.0.0.0
EXPOSE 8700
CMD ["cairn", "server"]
