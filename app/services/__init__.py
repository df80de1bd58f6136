"""The services between HTTP and the engine: they load, run and store."""
