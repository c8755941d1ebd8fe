"""From feature blocks to one vector: fusers, reducers (PCA, pseudo-label LDA), query expansion."""
