"""cosign-compatible image signatures and containers' policy.json.

``keys`` (key files, no I/O) and ``payload`` (the simple-signing payload) are pure;
``attachments`` reads and writes ``.sig`` manifests through the registry client;
``verify`` decides (crypto over the exact bytes, then the payload, then the policy);
``policy`` parses policy.json; ``images`` joins them for the CLI and the pull hook.
"""
