"""The customer portal: the pages a customer uses in the browser (issue 26 section 1)."""
