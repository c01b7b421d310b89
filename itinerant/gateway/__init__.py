"""The A2A gateway: the mesh speaks the Agent2Agent protocol (JSON-RPC over HTTP, SSE).

The gateway serves one application, the :class:`itinerant.Mesh` ``ITINERANT_APP`` names: its
agent card tells the mesh's name, description and skills, and a message becomes the mesh's
request (``mesh.request_model``; plain words through ``mesh.from_text``). An A2A task *is* a
saga: ``message/send`` publishes the request (its task id is the saga id), ``tasks/get`` and
``message/stream`` read the coordinator's saga view and the results topic, ``tasks/cancel`` asks
the coordinator to compensate. The gateway keeps no saga state of its own. Each bearer token is
a principal that sees only its own tasks, within rate and stream limits
(docs/security-gateway.md).
"""
