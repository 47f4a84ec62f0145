// imgfs — placeholder; implemented by its owner.
