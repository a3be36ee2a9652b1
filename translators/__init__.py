"""Pure protocol mapping between OpenAI's wire format and each backend's native one.

Nothing here opens a socket, reads the environment or a setting, or logs; ``proxy/`` does.
"""
