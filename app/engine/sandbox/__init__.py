"""The sandbox templates and expressions run in, bounded by the turn's budget."""

from app.engine.sandbox.environment import TandemSandbox
from app.engine.sandbox.template_checks import TemplateLimits

__all__ = ["TandemSandbox", "TemplateLimits"]
