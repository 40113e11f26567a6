"""The web app: policy hosting now; the HTTPS rua endpoint and the dashboard mount here later."""
