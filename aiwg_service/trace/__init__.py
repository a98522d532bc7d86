"""One linked record: from a source event through rule runs to the tasks it caused, with costs."""
