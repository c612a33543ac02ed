"""Tools from Model Context Protocol servers: configuration (config.py), the worker's
connections and registration beside the built-ins (servers.py), and results as text for the LLM
(results.py). Only config.py is imported by settings; it depends on pydantic alone."""
