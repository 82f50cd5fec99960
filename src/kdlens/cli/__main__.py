from kdlens.cli.main import app

app()
