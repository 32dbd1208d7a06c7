"""alert-bridge: verified ThunderStack webhooks in, Slack/email/webhook alerts out."""

__version__ = "0.1.0"
