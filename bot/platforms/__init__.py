"""Platform adapters. Each only translates between its platform and core events."""
