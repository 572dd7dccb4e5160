"""HTTP routes of the VO registry (`catalogue.vos`): global admins add and delete VOs; a VO's
members see their VO; a VO's admins manage its members and switch its SEs for it. Another VO
answers like a missing one."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from catalogue import namespace, vo_removal, vos
from catalogue.authorization import require_admin
from catalogue.permissions import DEFAULT_DIR_MODE
from catalogue.vos import Vo, VoSeSwitches, qualified
from kernel.errors import InvalidInput, NotFound
from kernel.principal import ADMIN_SCOPE, Principal
from kernel.responses import JsonList
from kernel.web import ADMIN, DATABASE, ApiRoutes, json_response, principal_of, read_model, scopes

routes = ApiRoutes("vos")
M = TypeVar("M", bound=BaseModel)
OPEN_WORK: web.AppKey[tuple[vo_removal.OpenWork, ...]] = web.AppKey("vo_open_work")
"""The open work of a VO that deleting it waits for, given by the assembly (`cairn.components`)."""
READ = scopes("catalogue.read")
WRITE = scopes("catalogue.write")


class MembersChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    add: list[str] = Field(default_factory=list, max_length=10_000)
    remove: list[str] = Field(default_factory=list, max_length=10_000)
    admins: bool = Field(False, description="change the VO's admins instead of its members")


def _visible(principal: Principal, name: str) -> None:
    if principal.confined and name != principal.vo:
        raise NotFound(f"VO {name!r} does not exist")


async def _vo_for(request: web.Request) -> Vo:
    name = request.match_info["name"]
    _visible(principal_of(request), name)
    return await vos.get_vo(request.app[DATABASE], name)


async def _admin_change(request: web.Request, model: type[M], what: str) -> tuple[M, Vo]:
    """The body of a change to a VO and the VO, once the caller is its admin (or a global admin)."""
    body = await read_model(request, model)
    vo = await _vo_for(request)
    require_admin(principal_of(request), f"only an admin of VO {vo.name} (or of the installation) may {what}")
    return body, vo


@routes.get("/vos", policy=READ, summary="VOs of this installation (yours only, unless global admin)",
            response=JsonList)
async def list_vos(request: web.Request) -> web.Response:
    principal = principal_of(request)
    found = (await vos.registry(request.app[DATABASE])).values()
    return json_response([v.model_dump(mode="json") for v in found if not principal.confined or v.name == principal.vo])


@routes.get("/vos/{name}", policy=READ, summary="One VO: roots, scopes, SEs, sites, admins",
            responses={404: "no such VO (or not yours)"}, response=Vo)
async def show_vo(request: web.Request) -> web.Response:
    return json_response((await _vo_for(request)).model_dump(mode="json"))


@routes.put("/vos/{name}", policy=ADMIN, summary="Create or replace a VO (its missing root directories are made)",
            body=Vo, responses={409: "a root or DID scope of another VO"}, response=Vo)
async def put_vo(request: web.Request) -> web.Response:
    vo = await read_model(request, Vo)
    if vo.name != request.match_info["name"]:
        raise InvalidInput(f"body names VO {vo.name!r} but the path names {request.match_info['name']!r}")
    db = request.app[DATABASE]
    stored = await vos.put_vo(db, vo)
    # The roots belong to the VO's first admin and the VO's group of its own name (`cta:cta`,
    # the group `cairn token issue --vo cta` gives by default), mode 0775.
    owner = Principal(sub=qualified(vo.name, vo.admins[0]) if vo.admins else "root", vo=vo.name,
                      groups=(qualified(vo.name, vo.name),), scopes=frozenset({ADMIN_SCOPE}))
    for root in vo.roots:
        await namespace.mkdir(db, owner, root, parents=True, mode=DEFAULT_DIR_MODE)
    return json_response(stored.model_dump(mode="json"))


@routes.get("/vos/{name}/members", policy=READ, summary="A VO's members and admins",
            responses={404: "no such VO (or not yours)"})
async def members(request: web.Request) -> web.Response:
    vo = await _vo_for(request)
    return json_response({"vo": vo.name, "members": vo.members, "admins": vo.admins})


@routes.patch("/vos/{name}/members", policy=WRITE, body=MembersChange,
              summary="Add or remove members (or admins) of a VO: its admins or a global admin",
              responses={403: "not an admin of this VO", 404: "no such VO (or not yours)"})
async def change_members(request: web.Request) -> web.Response:
    body, vo = await _admin_change(request, MembersChange, "change its members")
    changed = await vos.change_members(request.app[DATABASE], vo.name, add=body.add, remove=body.remove,
                                       admins=body.admins)
    return json_response({"vo": changed.name, "members": changed.members, "admins": changed.admins})


@routes.delete("/vos/{name}", policy=ADMIN, summary="Delete a VO that has no files, directories or datasets "
               "left, nor open jobs, rules, requests, subscriptions or transformations",
               responses={404: "no such VO", 409: "data or open work remain (named), or it is the default VO"})
async def delete_vo(request: web.Request) -> web.Response:
    name, open_work = request.match_info["name"], request.app[OPEN_WORK]
    await vo_removal.delete_vo(request.app[DATABASE], principal_of(request), name, open_work)
    return json_response({"deleted": name})


@routes.patch("/vos/{name}/ses/{se}", policy=WRITE, body=VoSeSwitches, response=Vo,
              summary="Switch reads/writes/deletes of the VO's files on one of its SEs: its admins or a global admin",
              responses={403: "not an admin of this VO", 404: "no such VO (or not yours), or an SE it does not use"})
async def switch_se(request: web.Request) -> web.Response:
    body, vo = await _admin_change(request, VoSeSwitches, "switch its SEs")
    changed = await vos.switch_se(request.app[DATABASE], vo.name, request.match_info["se"], body)
    return json_response(changed.model_dump(mode="json"))
