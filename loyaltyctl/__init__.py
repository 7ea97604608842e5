"""loyaltyctl: run a customer loyalty program from the terminal and cron."""

__version__ = "0.1.0"
