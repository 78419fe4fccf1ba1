"""Health: the monitor that scores services, active checks, and the HTTP endpoint serving them."""
