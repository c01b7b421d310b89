"""Itinerant: every AI agent is an ordinary, well-behaved Kafka microservice."""
