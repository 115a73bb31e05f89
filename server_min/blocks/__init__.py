"""Block stores."""
