"""The collection on disk: catalog, generations, staging, feature blocks, face items, export."""
