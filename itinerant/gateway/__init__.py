"""The A2A gateway: the mesh speaks the Agent2Agent protocol (JSON-RPC over HTTP, SSE).

The gateway serves one application, the :class:`itinerant.Mesh` ``ITINERANT_APP`` names: its
agent card tells the mesh's name, description and skills, and a message becomes the mesh's
request (``mesh.request_model``; plain words through ``mesh.from_text``). An A2A task *is* a
saga: ``SendMessage`` publishes the request (its task id is the saga id), ``GetTask``,
``ListTasks`` and ``SendStreamingMessage`` read the coordinator's saga view and the results
topic, ``CancelTask`` asks the coordinator to compensate (A2A 1.0; 0.3 clients are served
too). The gateway keeps no saga state of its own. Each bearer token is
a principal that sees only its own tasks, within rate and stream limits
(docs/security-gateway.md).
"""
