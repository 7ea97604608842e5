"""The operations users name. Each takes a Session and does its work inside the caller's
transaction (services flush, the CLI's ``session_scope`` commits); none prints."""
