"""The shared runtime: everything that is not an agent's own job, in one place."""
