from durable_orchestrator.cli.main import app

app()
