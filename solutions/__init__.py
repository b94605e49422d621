"""Reference solutions, one module per chapter, in the order the book teaches them."""
