"""Moving blocks: the upload pipeline (what the server lacks, in batches, as deltas where they help),
ordered prefetched downloads, and staged parts of big commits."""
