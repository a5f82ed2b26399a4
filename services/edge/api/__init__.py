"""One module per capability: its OpenAI (or native) routes, request checks and pure
mappings between HTTP bodies and pipeline events. ``services.edge.handlers.ROUTES``
lists every route; adding a capability is a module here plus its lines there."""
