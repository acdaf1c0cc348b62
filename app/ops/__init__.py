"""Operations: supervisor client, health, infrastructure, GPU, performance, cleanup and storage."""
