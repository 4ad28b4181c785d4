"""Security rules: views that bypass row level security, functions with a mutable search_path, policies that
trust data the user controls."""
