FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install .
RUN useradd --create-home tradebot && mkdir -p /app/logs /app/data && chown tradebot /app/logs /app/data
USER tradebot
CMD ["tradebot", "--help"]
