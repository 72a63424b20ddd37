"""The bottom layer every flow stands on: settings, security, Kafka clients, metrics,
health and consumer lag. It imports nothing from the layers above it."""
