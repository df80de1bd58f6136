"""The workflow engine: definitions, validation, expressions and the turn runner.

Pure Python: it knows nothing of HTTP or MongoDB. The service layer hands it a
compiled workflow, a run's state and a turn's input, and gets back events and
the new state.
"""
