"""The operator web console: sagas, dead letters and approvals in a browser, served by the mesh
as its own service (docs/console.md)."""
