"""Thin adapters to AWS services: DynamoDB (pynamodb), S3 and SQS (boto3)."""
