"""The bank: customer PINs, demo data and the banking tools the agent calls during a call."""
