-- Why each request went to its account (issue 16, docs/routing.md): one line naming the chosen
-- account and how it was chosen, and the reasons for the first few accounts skipped. NULL for
-- requests recorded before this column, and for requests refused before routing.
ALTER TABLE requests ADD COLUMN route TEXT;
