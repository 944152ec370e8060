-- The change log (transaction_changes) is written by the merge itself, one set-based statement
-- per account over the change sequence range it just used, instead of a trigger per row: the
-- same rows, at about a third of the cost of storing a large import.
DROP TRIGGER transactions_log_insert;
DROP TRIGGER transactions_log_update;
