"""The A2A gateway: the mesh speaks the Agent2Agent protocol (JSON-RPC over HTTP, SSE).

An A2A task *is* a saga: ``message/send`` publishes a trip request (its task id is the saga id),
``tasks/get`` and ``message/stream`` read the coordinator's saga view and the results topic,
``tasks/cancel`` asks the coordinator to compensate. The gateway keeps no saga state of its own.
"""
