"""Keys, pseudonyms and (in later work) field encryption and access control."""
