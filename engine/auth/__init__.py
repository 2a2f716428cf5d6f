"""Authentication and authorization: roles and permissions, dashboard users and sessions,
and API tokens for machine clients (engine.auth.tokens, `chargebridge token`)."""
