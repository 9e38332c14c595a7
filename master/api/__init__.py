"""The HTTP API of a master (aiohttp, /api/v1): translates HTTP to the ControlPlane protocol."""
