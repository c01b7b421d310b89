"""The mesh as an MCP server (docs/mcp.md): tools to publish a request and wait for its result,
read a saga, and list dead letters and pending approvals, behind the gateway's tokens."""
