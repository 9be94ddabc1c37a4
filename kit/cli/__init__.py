"""The command line: parses, prints, and maps errors to exit codes. The only
place that imports typer or prints."""
