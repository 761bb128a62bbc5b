// Build-time defaults. scripts/build-extension.sh rewrites this file in the built extension with the
// model URL it was given (--model-url / MODEL_URL); this source copy has none, so an extension loaded
// without a build asks for a model in Options.
export const DEFAULT_MODEL_URL = "";
// The embedding model for "Find by meaning" (--embed-model-url); none here either.
export const DEFAULT_EMBED_MODEL_URL = "";
