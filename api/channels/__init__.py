"""Channel adapters: where customers write from (web chat, mobile app; WeChat next)."""
