"""asyncpg wrapping: connection and pool shells, statement runner, SQL reading, classification."""
