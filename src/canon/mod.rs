//! URL canonicalization (Safe Browsing rules) and lookup expressions. Pure: no I/O.
