"""Who is asking and what they may do: passwords (argon2), tokens (ES256 JWTs), htpasswd, the access policy."""
