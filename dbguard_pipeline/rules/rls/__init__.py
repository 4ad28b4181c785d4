"""Row level security rules: is RLS on where tenant data lives, and do the policies isolate tenants?
Policies are read on the parse tree (:mod:`dbguard_pipeline.policy`), not as text."""
