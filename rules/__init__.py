"""Replication rules: the rule model and store (`store`), locks (`locks`), SE expressions
(`se_expression`), placement (`placement`), evaluation and progress (`evaluation`, `progress`),
the transfer requests a rule asks for (`transfer_requests`), the catalogue change feed as the
rules read it (`feed`, `triggers`), subscriptions (`subscriptions`) and quotas (`quotas`); the
daemons (`daemon`, `evaluator`, `repairer`, `cleaner`, `subscriber`); HTTP routes (`routes`,
`subscription_routes`) and SDK calls (`client`). Sits above `transfers` in the import order."""
