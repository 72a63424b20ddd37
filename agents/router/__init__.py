"""AI request routing: ai.requests -> providers -> ai.responses + usage.events."""
