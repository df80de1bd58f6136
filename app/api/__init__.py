"""The HTTP layer: controllers, request and response Structs, auth and error mapping."""
