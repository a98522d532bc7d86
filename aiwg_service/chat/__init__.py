"""Conversations with the agent (resumed Claude Code sessions), the tmux dashboard and interactive sessions."""
