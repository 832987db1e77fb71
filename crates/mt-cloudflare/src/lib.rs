//! Cloudflare REST and GraphQL client. Filled by the mt-cloudflare issue.
