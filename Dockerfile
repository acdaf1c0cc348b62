# One image for every Vigil process; docker-compose.yml picks the command (the Procfile's).
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY setup.cfg pyproject.toml constraints.txt README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install --no-cache-dir -c constraints.txt .
COPY . .
RUN useradd --create-home vigil && mkdir -p /data && chown vigil /data
USER vigil
