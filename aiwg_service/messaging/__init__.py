"""Messaging: Slack, Discord and Telegram both ways, Apprise out; one hub, one module per bridge."""
