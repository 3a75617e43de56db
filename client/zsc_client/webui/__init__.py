"""Browser UI and JSON API for the zero-shot ensemble (`zsc webui`); needs the `webui` extra (aiohttp).

``validation`` has no aiohttp import, so it can be tested and reused without the extra."""
